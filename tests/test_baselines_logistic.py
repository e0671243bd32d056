"""Logistic regression as a zorb network: the same predictions as scikit-learn's model, C chosen
on the validation set, classes absent from the training data, the binary case, bad input."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import zorb
from zorb.baselines import fit_logistic_regression
from zorb.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_the_network_predicts_what_scikit_learns_model_predicts(digits):
    net, report = fit_logistic_regression(digits.x_train, digits.y_train, C=0.1)
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    model = LogisticRegression(C=0.1, max_iter=1000).fit(flat(digits.x_train), digits.labels_train)
    ours = zorb.predict(net, digits.x_test)
    assert [layer.kind for layer in net.layers] == ["flatten", "dense", "softmax"]
    np.testing.assert_array_equal(ours.argmax(axis=1), model.predict(flat(digits.x_test)))
    # zorb's softmax subtracts eps = 1e-5 from each exponential: probabilities agree to ~1e-5
    np.testing.assert_allclose(ours, model.predict_proba(flat(digits.x_test)), atol=1e-4)
    assert zorb.evaluate(net, digits.x_test, digits.y_test)["accuracy"] == pytest.approx(
        model.score(flat(digits.x_test), digits.labels_test))
    assert report.C == 0.1 and report.validation_accuracy == {} and report.iterations > 1


def test_C_is_chosen_on_the_validation_set_then_refitted_on_everything(digits):
    x, y = digits.x_train[:600], digits.y_train[:600]
    x_val, y_val = digits.x_train[600:], digits.y_train[600:]
    grid = [1e-4, 1e-2, 1.0]
    net, report = fit_logistic_regression(x, y, C=grid, validation=(x_val, y_val))
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    scores = {c: LogisticRegression(C=c, max_iter=1000).fit(flat(x), y.argmax(1)).score(flat(x_val), y_val.argmax(1))
              for c in grid}
    assert report.validation_accuracy == pytest.approx(scores)
    assert report.C == max(grid, key=lambda c: (scores[c], -c)) and scores[1e-4] < scores[report.C]
    refit = LogisticRegression(C=report.C, max_iter=1000).fit(flat(digits.x_train), digits.labels_train)
    np.testing.assert_array_equal(zorb.predict(net, digits.x_test).argmax(1), refit.predict(flat(digits.x_test)))
    assert set(report.metrics) == {"logreg.C", "logreg.iterations", "logreg.val_accuracy.C0.0001",
                                   "logreg.val_accuracy.C0.01", "logreg.val_accuracy.C1"}


@pytest.mark.parametrize("classes", [[0, 3, 7], [2, 5]])
def test_classes_without_training_samples_are_never_predicted(digits, classes):
    keep = np.isin(digits.labels_train, classes)
    net, _ = fit_logistic_regression(digits.x_train[keep], digits.y_train[keep], C=1.0)
    assert net.output_shape == (10,)
    predicted = zorb.predict(net, digits.x_test).argmax(axis=1)
    assert set(np.unique(predicted)) <= set(classes)
    among = np.isin(digits.labels_test, classes)
    assert np.mean(predicted[among] == digits.labels_test[among]) > 0.9


def test_a_binary_target_gets_a_sigmoid_output():
    data = load_dataset("xor", seed=0)
    net, _ = fit_logistic_regression(data.x_train, data.y_train, C=1.0)
    model = LogisticRegression(C=1.0, max_iter=1000).fit(data.x_train, data.y_train[:, 0])
    assert net.layers[-1].kind == "sigmoid" and net.output_shape == (1,)
    np.testing.assert_allclose(zorb.predict(net, data.x_test)[:, 0], model.predict_proba(data.x_test)[:, 1],
                               atol=1e-12)


@pytest.mark.parametrize("kwargs,message", [
    ({"C": [1.0, 0.1]}, "choosing C among \\[1.0, 0.1\\] needs a validation set"),
    ({"C": -1.0}, "C must be a positive number"),
    ({"C": []}, "C must be a positive number"),
    ({"max_iter": 0}, "max_iter must be a positive integer"),
])
def test_bad_options_give_one_clear_error(digits, kwargs, message):
    with pytest.raises(zorb.ConfigError, match=message):
        fit_logistic_regression(digits.x_train, digits.y_train, **kwargs)


def test_refuses_regression_targets_and_a_single_class():
    boston = load_dataset("boston", seed=0)
    with pytest.raises(zorb.ConfigError, match="this dataset is a regression"):
        fit_logistic_regression(boston.x_train, boston.y_train)
    y = np.zeros((10, 3))
    y[:, 1] = 1
    with pytest.raises(zorb.ConfigError, match="every training target is class 1"):
        fit_logistic_regression(np.random.default_rng(0).random((10, 4)), y)
