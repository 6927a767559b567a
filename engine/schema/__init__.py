"""The contract between the engine and the manager, standard library only: the config schema and
its catalogue of names (config, catalog) and the event protocol (events). Both sides import it."""
