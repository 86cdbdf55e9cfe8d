"""The controller <-> proxy discovery protocol and the client every proxy uses."""
