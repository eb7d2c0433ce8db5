"""The ann-benchmarks algorithm folder (bench/ann_benchmarks/tqsearch/).

The module is driven through the runner's protocol (fit, set_query_arguments,
query, batch_query + get_batch_results, get_additional, done, __str__) and its
config.yml is expanded the way ann_benchmarks/definitions.py expands it. An
ann-benchmarks checkout is not needed: when ``ann_benchmarks`` is not
importable, a stand-in ``BaseANN`` with the same defaults is injected.
"""

import importlib.util
import itertools
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ALGO_DIR = Path(__file__).resolve().parents[1] / "bench" / "ann_benchmarks" / "tqsearch"
PKG = "_annb_standin"  # parent package the module is loaded under
K = 10


class StandInBaseANN:
    """The defaults of ann-benchmarks' ``BaseANN`` that the runner relies on."""

    def done(self):
        pass

    def get_memory_usage(self):
        """Resident set size in kB, as the runner measures index size."""
        try:
            import psutil
        except ImportError:
            import resource

            return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux
        return psutil.Process().memory_info().rss / 1024

    def fit(self, X):
        pass

    def query(self, q, n):
        return []

    def batch_query(self, X, n):
        self.res = [self.query(q, n) for q in X]

    def get_batch_results(self):
        return self.res

    def get_additional(self):
        return {}

    def __str__(self):
        return self.name


def _base_ann():
    try:
        from ann_benchmarks.algorithms.base.module import BaseANN
    except ImportError:
        return StandInBaseANN
    return BaseANN


@pytest.fixture(scope="module")
def algo_module():
    """module.py loaded as ``<PKG>.algorithms.tqsearch.module`` so ``..base.module`` resolves."""
    names = [PKG, f"{PKG}.algorithms", f"{PKG}.algorithms.base", f"{PKG}.algorithms.tqsearch"]
    for name in names:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(ALGO_DIR)] if name.endswith("tqsearch") else []
        sys.modules[name] = pkg
    base = types.ModuleType(f"{PKG}.algorithms.base.module")
    base.BaseANN = _base_ann()
    sys.modules[base.__name__] = base
    name = f"{PKG}.algorithms.tqsearch.module"
    spec = importlib.util.spec_from_file_location(name, ALGO_DIR / "module.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for key in [*names, base.__name__, name]:
            sys.modules.pop(key, None)


# -- data --------------------------------------------------------------------------------------
def _clustered(n, nq, d, seed):
    """Gaussian clusters with unequal spreads: not random, still a real search problem."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, d)).astype(np.float32)
    scale = rng.uniform(0.3, 1.0, 64).astype(np.float32)
    lab = rng.integers(0, 64, n + nq)
    x = centers[lab] + scale[lab, None] * rng.standard_normal((n + nq, d)).astype(np.float32)
    return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])


def _ground_truth(train, test, metric, k):
    if metric == "angular":
        a = train / np.linalg.norm(train, axis=1, keepdims=True)
        b = test / np.linalg.norm(test, axis=1, keepdims=True)
        dist = -(b @ a.T)
    else:
        dist = (test**2).sum(1)[:, None] - 2 * test @ train.T + (train**2).sum(1)[None, :]
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


def _sample():
    """(train, test, neighbors, metric): the shipped sample, or a synthetic set without it."""
    try:
        from tqsearch.datasets import load_dataset, sample_path

        ds = load_dataset(sample_path(), download=False, progress=False)
        return ds.train, ds.test[:200], ds.neighbors[:200, :K], ds.distance
    except (ImportError, AttributeError, ValueError, OSError):  # not shipped in this install
        train, test = _clustered(5000, 200, 64, seed=0)
        return train, test, _ground_truth(train, test, "angular", K), "angular"


@pytest.fixture(scope="module")
def sample():
    return _sample()


def _recall(found, truth):
    return np.mean([len(set(f[:K]) & set(t[:K])) / K for f, t in zip(found, truth, strict=True)])


def _run_like_runner(algo, train, test, query_args=None):
    """What ann_benchmarks.runner.run does with one instance, minus timing and storage."""
    before = algo.get_memory_usage()
    algo.fit(train)
    float(algo.get_memory_usage() - before)  # the runner stores this as index_size (kB)
    if query_args:
        algo.set_query_arguments(*query_args)
    results = [algo.query(q, K) for q in test]
    for res in results:
        assert len(res) == len(set(int(i) for i in res)), "duplicated candidates"
        assert len(res) <= K
    return results


# -- protocol ----------------------------------------------------------------------------------
def test_codes_recall_batch_and_name(algo_module, sample):
    train, test, truth, metric = sample
    algo = algo_module.TurboQuant(metric, 4)
    name = str(algo)
    results = _run_like_runner(algo, train, test)
    assert str(algo) == name == str(algo_module.TurboQuant(metric, 4))
    assert all(len(r) == K for r in results)
    recall = _recall(results, truth)
    assert recall > 0.7, recall

    algo.batch_query(test, K)
    batch = algo.get_batch_results()
    assert len(batch) == len(test)
    for one, many in zip(results, batch, strict=True):
        np.testing.assert_array_equal(np.asarray(one), np.asarray(many))

    extra = algo.get_additional()
    assert extra["code_size"] > 0 and extra["bytes_per_vector"] >= extra["code_size"]
    assert extra["dist_comps"] >= len(test) * len(train)
    algo.done()


def test_fewer_bits_lower_recall(algo_module, sample):
    train, test, truth, metric = sample
    recalls = {}
    for bits in (2, 4):
        algo = algo_module.TurboQuant(metric, bits)
        recalls[bits] = _recall(_run_like_runner(algo, train, test), truth)
        algo.done()
    assert 0.2 < recalls[2] < recalls[4], recalls


def test_rerank(algo_module, sample):
    train, test, truth, metric = sample
    algo = algo_module.TurboQuant(metric, 4, "corrected", True)
    codes = _recall(_run_like_runner(algo, train, test), truth)
    name0 = str(algo)
    algo.set_query_arguments(10)
    assert str(algo) != name0 and "rerank=10" in str(algo)
    reranked = _recall([algo.query(q, K) for q in test], truth)
    assert reranked > max(codes, 0.95), (codes, reranked)
    extra = algo.get_additional()
    assert extra["bytes_per_vector"] == extra["code_size"] + 4 * train.shape[1]
    algo.done()


def test_euclidean(algo_module):
    train, test = _clustered(3000, 100, 32, seed=1)
    train = 3 * train + 5  # not centred, norms far from 1
    test = 3 * test + 5
    truth = _ground_truth(train, test, "euclidean", K)
    algo = algo_module.TurboQuant("euclidean", 4)
    recall = _recall(_run_like_runner(algo, train, test), truth)
    assert recall > 0.6, recall
    algo.done()


def test_bad_arguments(algo_module):
    with pytest.raises(ValueError, match="metric"):
        algo_module.TurboQuant("hamming", 4)
    with pytest.raises(ValueError, match="estimator"):
        algo_module.TurboQuant("angular", 4, "exact")
    algo = algo_module.TurboQuant("angular", 2)
    algo.fit(_clustered(200, 1, 16, seed=2)[0])
    with pytest.raises(ValueError, match="keep_vectors"):
        algo.set_query_arguments(5)


# -- config.yml --------------------------------------------------------------------------------
def _combinations(args):
    """ann-benchmarks' product over list elements (a scalar counts as a one-element list)."""
    args = [a if isinstance(a, list) else [a] for a in args]
    return [list(c) for c in itertools.product(*args)]


def _definitions(config, point_type, metric, dimension, count=K):
    """(name, constructor, arguments, query_argument_groups) as definitions.py builds them."""
    section = config[point_type]
    out = []
    for entry in list(section.get("any", [])) + list(section.get(metric, [])):
        for key in ("name", "docker_tag", "module", "constructor", "run_groups"):
            assert key in entry, f"{metric} entry lacks {key}"
        subst = {"@count": count, "@metric": metric, "@dimension": dimension}
        for group in entry["run_groups"].values():
            assert "args" in group, "each run group needs args"
            query_groups = _combinations(group["query_args"]) if "query_args" in group else []
            for args in _combinations(group["args"]):
                full = [subst.get(a, a) if isinstance(a, str) else a
                        for a in entry.get("base_args", []) + args]
                out.append((entry["name"], entry["constructor"], full, query_groups))
    return out


@pytest.fixture(scope="module")
def config():
    yaml = pytest.importorskip("yaml")
    with open(ALGO_DIR / "config.yml") as f:
        return yaml.safe_load(f)


def test_config_structure(config):
    assert set(config) == {"float"}
    assert set(config["float"]) == {"angular", "euclidean"}
    for metric, entries in config["float"].items():
        assert [e["name"] for e in entries] == ["tqsearch"]
        (entry,) = entries
        assert entry["module"] == "ann_benchmarks.algorithms.tqsearch"
        assert entry["docker_tag"] == "ann-benchmarks-tqsearch"
        assert entry["base_args"] == ["@metric"]
        assert entry["disabled"] is False
        defs = _definitions(config, "float", metric, dimension=32)
        bits = sorted({args[1] for _, _, args, q in defs if not q})
        assert bits == [2, 3, 4], "codes-only groups for 2, 3 and 4 bits"
        assert any(q for *_, q in defs), "a rerank group with query arguments"
        assert all(args[0] == metric for _, _, args, _ in defs)


def test_config_real_runner_agrees(config, tmp_path):
    """When ann-benchmarks is importable, its own parser must give the same definitions."""
    definitions = pytest.importorskip("ann_benchmarks.definitions")
    import shutil

    shutil.copytree(ALGO_DIR, tmp_path / "tqsearch")
    for metric in ("angular", "euclidean"):
        theirs = definitions.get_definitions(32, "float", metric, K, base_dir=str(tmp_path))
        ours = _definitions(config, "float", metric, 32)
        assert sorted((d.algorithm, d.constructor, str(d.arguments), str(d.query_argument_groups))
                      for d in theirs) == sorted((n, c, str(a), str(q)) for n, c, a, q in ours)


def test_every_run_group_instantiates(algo_module, config):
    train, test = _clustered(400, 3, 16, seed=3)
    for metric in ("angular", "euclidean"):
        for _, constructor, args, query_groups in _definitions(config, "float", metric, 16):
            algo = getattr(algo_module, constructor)(*args)
            algo.fit(train)
            for query_args in query_groups or [[]]:
                if query_args:
                    algo.set_query_arguments(*query_args)
                res = algo.query(test[0], K)
                assert len(res) == K == len(set(res.tolist()))
                assert str(algo).startswith("TurboQuant(")
            algo.done()
