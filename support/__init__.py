"""What the tests and the benchmarks share: child servers on free loopback ports (Centrifugo,
PostgreSQL, Redis), a subscribed centrifuge-python client, the browser tests' site, and the
skip-or-fail rule for missing tools.

Not part of the package (``pyproject.toml`` ships ``instant_signals*`` only;
``tests/test_packaging.py`` checks that the wheel holds no ``support/``). It imports the package
and, for the browser site, the test project's settings; nothing in ``instant_signals`` imports
it. Modules: ``environment`` (CI or not, ``need``, the artifacts directory), ``processes``
(Centrifugo, child processes, a counting proxy, lock errors), ``services`` (PostgreSQL, Redis),
``live`` (``LiveClient``), ``browser_pages`` (the site and Chromium for the browser tests).
"""
