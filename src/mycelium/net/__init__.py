"""L4 plumbing shared by the proxy, the runtime and the packages to come (ambient,
netmesh): what moves bytes and sets up connections, below every user of it.
It knows nothing above it (DESIGN.md, "Layout")."""
