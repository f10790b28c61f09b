"""The web dashboard. Lands with the dashboard issue; served by the API process."""
