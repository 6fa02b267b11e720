"""`feddqc report`: plots and tables a person can read, from a run or an experiment folder."""
