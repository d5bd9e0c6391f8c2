"""`frugal check-device`: every Pallas kernel compiled, checked against its reference and timed beside
the XLA path on the GPU or TPU it runs on."""
