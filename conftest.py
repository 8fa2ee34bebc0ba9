"""Fixtures shared by every test tier come from the test-ground plugins in e2e/testground."""

pytest_plugins = [
    "testground.fixtures_objectstores",
    "testground.fixtures_cluster",
    "testground.databases",
    "testground.csisnapshots",
]
