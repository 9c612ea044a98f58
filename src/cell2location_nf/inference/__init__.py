"""Training: device choice, seeding and the stochastic-variational-inference loop."""
