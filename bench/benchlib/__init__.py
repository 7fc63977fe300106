"""The benchmark driver's parts: stores (servers and counters), processes, report."""
