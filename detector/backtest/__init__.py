"""Backtesting: a recorded stream through the service's pipeline on the event-time clock.

``source`` reads a file as a stream, ``run`` replays it (scoring, drift, retraining,
reload), ``figures`` measures it, ``report`` draws it, ``driver`` ties them together,
``synthetic`` writes a drifting fleet to try it on.
"""
