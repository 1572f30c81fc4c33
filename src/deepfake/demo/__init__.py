"""Layer 2, beside ``data`` and never imported by serving: the demo dataset made offline from real faces
shipped in packages (sources, tracking, manipulations, the plan, rendering, the build)."""
