"""Process reward models: data, training, scoring, evaluation."""
