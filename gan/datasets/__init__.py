"""Data sets, one module per `data.name`, registered in gan.registry.DATASETS.

Each module registers a function `data_cfg -> Source` (gan.datasets._source). A source is read
once, by gan.prepared, into a prepared set that training and evaluation memory-map. This package
stays free of heavy imports: the registry lists its modules without importing them.
"""
