"""`feddqc experiment`: arms x hyperparameter pool x seeds through the real Flower simulation."""
