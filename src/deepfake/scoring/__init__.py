"""Layer 4: from logits to decisions and their measures. The one scoring rule, the aggregation strategies,
the metrics, the SageMaker model-quality format and the schema of ``evaluation.json``."""
