"""Storage pools and volume drivers. Lands with the storage issue."""
