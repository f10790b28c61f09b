"""xDS control plane and Envoy sidecars. Lands with the service-mesh issue."""
