"""The cluster-resources engine: Kubernetes manifests exported into snapshots and applied back.

- :mod:`.kube`: the Kubernetes API as export and apply need it (the only module of the
  engine that talks to a cluster);
- :mod:`.selection`: which objects an export or apply takes (types, namespaces, names,
  label selectors);
- :mod:`.clean`: manifests stripped of what the server set;
- :mod:`.export`: a cluster's manifests into a tree, then into a snapshot;
- :mod:`.apply`: a tree's manifests back into a cluster, in dependency order;
- :mod:`.snapshot_tree`: an exported tree read back out of a snapshot;
- :mod:`.diff`: two exported trees compared.

Nothing is imported here: a command loads only the modules it runs.
"""
