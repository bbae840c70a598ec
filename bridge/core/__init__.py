"""The ground floor: interfaces and the values that flow between drivers, face parameters, rotations, the media
clock, fan-out, statistics, errors and the config schema. Imports nothing else of the project."""
