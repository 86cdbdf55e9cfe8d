"""The data-plane engine: sidecar, gateway and waypoint are this proxy with different listeners."""
