"""The registered EMDLOT pyfunc, logged as code (MLflow "models from code"), so no pickled object is stored."""
from mlflow.models import set_model

from emdlot.runs.package import EMDLOTPyfunc

set_model(EMDLOTPyfunc())
