"""A small directed acyclic graph of hashable nodes."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from tukio.errors import DAGValidationError

__all__ = ["DAG", "DAGValidationError", "find_cycle"]

N = TypeVar("N", bound=Hashable)


def find_cycle(graph: Mapping[N, Iterable[N]]) -> list[N] | None:
    """Return one cycle of `graph` as a closed path ``[a, b, ..., a]``, or None.

    Iterative depth-first search, so deep graphs do not hit the recursion limit.
    """
    white, grey, black = 0, 1, 2
    colour: dict[N, int] = dict.fromkeys(graph, white)
    for start in graph:
        if colour[start] != white:
            continue
        path: list[N] = [start]
        stack = [iter(graph[start])]
        colour[start] = grey
        while stack:
            node = next(stack[-1], None)
            if node is None:
                colour[path.pop()] = black
                stack.pop()
                continue
            state = colour.get(node, black)
            if state == grey:
                return [*path[path.index(node) :], node]
            if state == white:
                colour[node] = grey
                path.append(node)
                stack.append(iter(graph[node]))
    return None


#: How many nodes of a long cycle `describe_cycle` names.
CYCLE_SHOWN = 5


def describe_cycle(cycle: list[Any]) -> str:
    """Format a closed path as ``a -> b -> a``; a long one as ``a -> b -> ... -> z -> a (a cycle of N)``."""
    names = [str(getattr(node, "uid", node)) for node in cycle]
    if len(names) <= CYCLE_SHOWN + 3:
        return " -> ".join(names)
    return " -> ".join([*names[:CYCLE_SHOWN], "...", *names[-2:]]) + f" (a cycle of {len(names) - 1})"


class DAG(Generic[N]):
    """A directed acyclic graph stored as an adjacency mapping.

    `graph` maps each node to the set of its successors.
    """

    def __init__(self) -> None:
        self.graph: dict[N, set[N]] = {}

    def add_node(self, node: N) -> None:
        """Add `node`.

        Raises:
            ValueError: the node is already in the graph.
        """
        if node in self.graph:
            raise ValueError(f"node {node!r} already exists")
        self.graph[node] = set()

    def delete_node(self, node: N) -> None:
        """Remove `node` and every edge to or from it.

        Raises:
            KeyError: the node is not in the graph.
        """
        if node not in self.graph:
            raise KeyError(f"node {node!r} does not exist")
        del self.graph[node]
        for successors in self.graph.values():
            successors.discard(node)

    def add_edge(self, predecessor: N, successor: N) -> None:
        """Add the edge ``predecessor -> successor``.

        Raises:
            KeyError: a node is not in the graph.
            DAGValidationError: the edge would close a cycle (nothing is added).
        """
        for node in (predecessor, successor):
            if node not in self.graph:
                raise KeyError(f"node {node!r} does not exist")
        if successor in self.graph[predecessor]:
            return
        self.graph[predecessor].add(successor)
        cycle = find_cycle(self.graph)
        if cycle is not None:
            self.graph[predecessor].discard(successor)
            raise DAGValidationError(f"graph: cycle {describe_cycle(cycle)}")

    def delete_edge(self, predecessor: N, successor: N) -> None:
        """Remove the edge ``predecessor -> successor``.

        Raises:
            KeyError: there is no such edge.
        """
        if successor not in self.graph.get(predecessor, ()):
            raise KeyError(f"edge {predecessor!r} -> {successor!r} does not exist")
        self.graph[predecessor].remove(successor)

    def predecessors(self, node: N) -> list[N]:
        """Return the nodes with an edge to `node`."""
        return [pred for pred, succs in self.graph.items() if node in succs]

    def successors(self, node: N) -> list[N]:
        """Return the nodes `node` has an edge to.

        Raises:
            KeyError: the node is not in the graph.
        """
        return list(self.graph[node])

    def leaves(self) -> list[N]:
        """Return the nodes without successors."""
        return [node for node, succs in self.graph.items() if not succs]

    def root_nodes(self) -> list[N]:
        """Return the nodes without predecessors, in insertion order."""
        has_pred = {succ for succs in self.graph.values() for succ in succs}
        return [node for node in self.graph if node not in has_pred]

    def edges(self) -> list[tuple[N, N]]:
        """Return every edge as a ``(predecessor, successor)`` pair."""
        return [(pred, succ) for pred, succs in self.graph.items() for succ in succs]

    def copy(self) -> DAG[N]:
        """Return a copy sharing the nodes but not the adjacency sets."""
        new: DAG[N] = DAG()
        new.graph = {node: set(succs) for node, succs in self.graph.items()}
        return new

    def validate(self) -> None:
        """Check the graph has no cycle.

        Raises:
            DAGValidationError: naming one cycle.
        """
        cycle = find_cycle(self.graph)
        if cycle is not None:
            raise DAGValidationError(f"graph: cycle {describe_cycle(cycle)}")

    def is_valid(self) -> bool:
        """Return True when the graph has no cycle."""
        return find_cycle(self.graph) is None

    @classmethod
    def from_dict(cls, graph: Mapping[N, list[N]]) -> DAG[N]:
        """Build a DAG from ``{node: [successors]}``.

        Raises:
            KeyError: a successor is not a key of the mapping.
            TypeError: successors are not given as a list.
            DAGValidationError: the graph has a cycle.
        """
        dag: DAG[N] = cls()
        for node in graph:
            dag.add_node(node)
        for node, successors in graph.items():
            if not isinstance(successors, list):
                raise TypeError(f"successors of {node!r} must be a list, not {type(successors).__name__}")
            for succ in successors:
                if succ not in dag.graph:
                    raise KeyError(f"successor {succ!r} of {node!r} is not a node")
                dag.graph[node].add(succ)
        dag.validate()
        return dag

    def __len__(self) -> int:
        return len(self.graph)

    def __repr__(self) -> str:
        return f"DAG({self.graph!r})"
