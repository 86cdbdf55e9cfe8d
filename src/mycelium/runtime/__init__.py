"""Local pods: processes or network namespaces, their interception rules, manifests."""
