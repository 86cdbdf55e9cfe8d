"""The controller: registry, config compiler, CA, discovery server, REST API and
dashboard backend. It never imports the proxy or the runtime (DESIGN.md, "Layout")."""
