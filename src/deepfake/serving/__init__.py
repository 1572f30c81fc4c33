"""Layer 5: the model behind requests. The predictor, request parsing, the SageMaker handlers, the local
HTTP server and ``model.tar.gz``, which ships exactly what the handlers import."""
