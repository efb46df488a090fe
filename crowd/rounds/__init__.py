"""A round, from open to crowned: the state machine (`state`), what the round trains and
judges on (`data`), the engine that trains, judges and crowns (`engine`) and the background
worker that runs it (`worker`)."""
