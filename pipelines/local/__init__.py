"""Execute a SageMaker pipeline definition on this machine (``pipeline-local``): see docs/sagemaker.md.

Layers, each a small module: ``expressions`` (Get, Std:Join, Std:JsonGet, conditions),
``definition`` (reading and checking a definition), ``s3`` and ``server`` (the AWS API),
``jobs`` (a Processing job as local processes), ``cache`` (step caching), ``steps`` (the
step types), ``executor`` (an execution), ``deploy`` (the deployment half) and ``cli``.
"""
