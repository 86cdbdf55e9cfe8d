"""L7 filters: one module per capability, each exposing one filter class."""
