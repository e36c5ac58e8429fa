"""Federated learning: rounds of anonymous model updates, aggregated with FedSubAvg."""
