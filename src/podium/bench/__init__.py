"""`podium bench`: load generators that drive a running Podium over real sockets."""
