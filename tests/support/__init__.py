"""What more than one test module uses: the world the end-to-end tests run in, raw sockets, subprocesses,
a clock the test moves, polling. Fixtures stay in the conftest files; they build on these."""
