"""zorb.sklearn: scikit-learn's own estimator checks, and the estimators inside its tools.
Every check applies (none is listed as an expected failure); only check_array_api_input skips
itself unless SCIPY_ARRAY_API is set."""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from zorb.sklearn import ZORBClassifier, ZORBRegressor


@parametrize_with_checks([ZORBClassifier(), ZORBRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_grid_search_over_ridge_in_a_pipeline_on_digits():
    X, y = load_digits(return_X_y=True)
    X, y = X[:600], y[:600]
    pipeline = make_pipeline(MinMaxScaler(), ZORBClassifier(layers="dense[64] tanh"))
    search = GridSearchCV(pipeline, {"zorbclassifier__ridge": [0.0, 1e-2, 1.0]}, cv=3).fit(X, y)
    assert search.best_params_["zorbclassifier__ridge"] in (0.0, 1e-2, 1.0)
    assert search.best_score_ > 0.8  # 10 classes: chance is 0.1
    scores = cross_val_score(ZORBRegressor(layers="dense[16] tanh", ridge=1e-3), X[:, :32], X[:, 40], cv=3)
    assert np.all(np.isfinite(scores))
