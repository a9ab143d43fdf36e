"""The pure correlation core: rules, routing, the incident lifecycle and the engine.

Layer 2 (docs/architecture.md): no Kafka, network, process, file or clock; time moves only when
the input log says so. Replay it from a list of records with no broker (docs/architecture.md,
"The core on its own").
"""
