"""The Azure provider loads its SDK without aiohttp (storage/providers/azure.py): a CLI
process does not pay for aiohttp's import, can still import aiohttp afterwards, and a
process that loaded aiohttp first (the operator's, through kopf) keeps it.

Each case runs in a fresh interpreter: what is tested is what a process imports. That the
provider then works is proven against Azurite by the conformance suite and by the CLI's
tests on Azure, which run ``safehold`` as a process of its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _python(code: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_provider_loads_without_aiohttp_and_leaves_it_importable() -> None:
    _python(
        """
        import sys
        import safehold.storage.providers.azure
        assert "aiohttp" not in sys.modules, "the Azure SDK loaded aiohttp"
        import aiohttp  # hidden only while the SDK loaded
        """
    )


def test_a_process_that_loaded_aiohttp_first_keeps_it() -> None:
    _python(
        """
        import sys
        import aiohttp
        import safehold.storage.providers.azure
        assert sys.modules["aiohttp"] is aiohttp
        """
    )
