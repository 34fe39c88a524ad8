"""Commands that talk to Kafka (run, retrain, demo), kept apart so `train` stays light."""
