"""Methods from outside the suite: a package in a temporary folder registers a method and its yaml
through the method_modules / method_conf_dirs settings, the environment, or an entry point."""
from __future__ import annotations

import pytest

from conftest import SMOKE, read_json
from fixtures_plugins import write_plugin

BASE = [a for a in SMOKE if not a.startswith("method=")] + ["train.epochs=1"]


def test_method_modules_and_conf_dirs_settings(tmp_path, tmp_results, cli, monkeypatch):
    pkg = write_plugin(tmp_path / "site", "nlbtest_settings", "settings_ce")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    args = ["run", *BASE, "method=settings_ce", "method_modules=[nlbtest_settings.methods]",
            f"method_conf_dirs=[{pkg / 'conf'}]"]
    r = cli(args, tmp_results)
    assert r.rc == 0, r.err
    (path,) = tmp_results.records()
    rec = read_json(path)
    assert rec["status"] == "completed" and rec["method"] == "settings_ce"
    assert rec["method_module"] == "nlbtest_settings.methods"
    assert rec["effective"]["method_params"] == {"fail_at_epoch": -1}       # from the package's yaml
    assert path.parent.name == "settings_ce"
    # a hyperparameter the method does not have is caught like any built-in method's
    r = cli([*args, "method.params.bogus=1"], tmp_results)
    assert r.rc == 2 and "'bogus'" in r.err and "fail_at_epoch" in r.err


def test_environment_variables_reach_run_and_list(tmp_path, tmp_results, cli, monkeypatch):
    pkg = write_plugin(tmp_path / "site", "nlbtest_env", "env_ce")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("NLBENCH_METHOD_MODULES", "nlbtest_env.methods")
    monkeypatch.setenv("NLBENCH_METHOD_CONF_DIRS", str(pkg / "conf"))
    r = cli(["list"])
    methods_line = next(line for line in r.out.splitlines() if line.startswith("methods:"))
    conf_line = next(line for line in r.out.splitlines() if line.startswith("conf/method:"))
    assert "env_ce" in methods_line.split(": ")[1].split(", ") and "env_ce" in conf_line
    r = cli(["validate", *BASE, "method=env_ce"], tmp_results)
    assert r.rc == 0 and r.out.startswith("ok: method=env_ce"), r.err


def test_entry_point_registers_method_and_its_yaml(tmp_path, tmp_results, cli, monkeypatch):
    from nlbench import plugins

    write_plugin(tmp_path / "site", "nlbtest_ep", "ep_ce", entry_point=True)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(plugins, "_entry_point_dirs", None)      # rescan: the package was just "installed"
    r = cli(["run", *BASE, "method=ep_ce"], tmp_results)      # no setting at all
    assert r.rc == 0, r.err
    (path,) = tmp_results.records()
    assert read_json(path)["method_module"] == "nlbtest_ep.methods"


@pytest.mark.parametrize("extra, needles", [
    (["method_modules=[no_such_pkg.methods]"], ["method_modules", "'no_such_pkg.methods'", "ModuleNotFoundError"]),
    (["method_conf_dirs=[/no/such/folder]"], ["method_conf_dirs", "'/no/such/folder'", "not a folder"]),
    (["method=not_registered"], ["'not_registered'", "valid choices", "ce"]),
])
def test_bad_plugin_settings_are_one_error_line(extra, needles, tmp_results, cli):
    r = cli(["run", *BASE, *extra], tmp_results)
    r.assert_bad_input(needles)
    assert not tmp_results.all_files()
