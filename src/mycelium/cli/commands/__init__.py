"""One module per `myc` verb; each exports one `*_command` function for `main.py`."""
