"""A round, from open to crowned: the state machine (`state`), what the round trains and
judges on (`material`), its bundle and record (`bundle`, `record`), the job that trains and
judges it from the bundle alone (`job`, `results`), where that job runs (`runners`, `hf_jobs`),
the scorer it judges with (`scorer_cache`), the engine that drives it and crowns (`engine`,
`crown`) and the background worker that runs it (`worker`)."""
