"""Running untrusted work in Docker: the engine, the hardening baseline, the container.

* :mod:`.engine`: connecting, labels, removing a run's objects, sweeping dead runs';
* :mod:`.hardening`: the one baseline every container reprobuild creates starts from
  (capabilities, seccomp, read-only root, tmpfs, limits, logs, labels);
* :mod:`.agent`: the host side of the sandbox's PID 1 (``incontainer/trap_agent.py``):
  how it is run, its handshakes, its log of egress attempts;
* :mod:`.container`: one hardened container per build (or diffoscope run).
"""
