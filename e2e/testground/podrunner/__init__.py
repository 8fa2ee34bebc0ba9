"""The local pod runner: it plays the kubelet for a test-ground cluster.

There is no scheduler, kubelet or container runtime on the test machines. This process polls
the apiserver for pods, runs each container's command as a local process in a private mount
namespace (volumes bind-mounted at their mount paths), and reports pod status back, so the real
Job, ReplicaSet and garbage-collection controllers of kube-controller-manager do their work.
It also provisions PersistentVolumes for claims of its storage class. See docs/development.md.
"""
