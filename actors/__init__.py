"""Actors: the runtime, supervision and the patient actor (see DESIGN.md).

Not built yet; the package exists so the layout matches the design card.
Like `lanes/`, it will import only the pure floor of `engine`.
"""
