"""The `myc` command line: kubectl-style verbs over the controller's REST API.

`main.py` assembles the Typer application; each verb is one module in `commands/`;
`client.py` is the only module that speaks HTTP; `manifests.py` reads and validates
`-f` inputs locally; `columns.py` and `render.py` turn resources into tables and text.
"""
