"""Workload identity: SPIFFE IDs, keys and CSRs, SVIDs and trust bundles.

Shared by every proxy; the certificate authority that signs SVIDs lives in the
controller (`mycelium.control.ca`).
"""
