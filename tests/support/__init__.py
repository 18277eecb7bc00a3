"""Test support: real servers on loopback that fluxd's tests drive as clients.

``tests.support.gitserver`` serves git repositories over smart HTTP (``git http-backend``
behind an aiohttp front) and, when ``openssh-server`` is installed, over SSH; it also
builds deterministic repositories with the git CLI.
"""
