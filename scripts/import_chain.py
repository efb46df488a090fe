"""The longest chain of imports inside crowd/, to see whether a change made the dependency
chain longer or shorter: modules are nodes, each direct import an edge (imports inside
functions count, as import-linter counts them), cycles collapse to one node, and the longest path
through what is left is printed. Arguments name modules to print the longest chain from.

    .venv/bin/python scripts/import_chain.py crowd.service crowd.evaluation
"""

from __future__ import annotations

import sys

import grimp
import networkx as nx


def import_graph(package: str = "crowd") -> nx.DiGraph:
    graph = grimp.build_graph(package)
    edges = nx.DiGraph()
    edges.add_nodes_from(graph.modules)
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module:
                edges.add_edge(module, imported)
    return edges


def longest_chains(edges: nx.DiGraph) -> dict[str, list[str]]:
    """For every module, the longest chain of imports that starts at it (cycles collapsed;
    a collapsed cycle is named by its members in braces)."""
    dag = nx.condensation(edges)
    name = {
        node: (
            next(iter(members))
            if len(members := dag.nodes[node]["members"]) == 1
            else "{" + ", ".join(sorted(members)) + "}"
        )
        for node in dag.nodes
    }
    best: dict[int, list[str]] = {}
    for node in reversed(list(nx.topological_sort(dag))):
        after = max((best[n] for n in dag.successors(node)), key=len, default=[])
        best[node] = [name[node], *after]
    return {module: best[dag.graph["mapping"][module]] for module in edges.nodes}


def main(argv: list[str]) -> int:
    chains = longest_chains(import_graph())
    longest = max(chains.values(), key=len)
    print(f"longest chain: {len(longest) - 1} imports\n  " + "\n  -> ".join(longest))
    for module in argv:
        chain = chains[module]
        print(f"{module}: {len(chain) - 1} imports: " + " -> ".join(chain))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
