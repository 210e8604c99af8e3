"""The code file of the registered MLflow model (MLflow's "models from code"); nothing imports it.

MLflow copies this file into every logged model and runs it when the model is loaded: it hands
MLflow the pyfunc wrapper around :func:`hpopipe.served.load`, so no pickled object is ever needed
(MLflow 3 refuses to unpickle a model by default). The hpopipe package travels beside it in ``code/``.
"""

from hpopipe.served import load
from hpopipe.tracking import set_served_model

set_served_model(load)
