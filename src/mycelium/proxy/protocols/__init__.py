"""Sans-IO protocol cores: detection, HTTP/1, HTTP/2 and TCP framing decisions."""
