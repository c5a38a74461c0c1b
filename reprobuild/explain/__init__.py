"""Explaining an unreproducible pair: which variation, what kind of cause, which fix.

:mod:`.search` finds the culprit variations with as few extra builds as it can;
:mod:`.symptoms` tells those builds apart member by member; :mod:`.causes` holds the
classes and their fixes (data); :mod:`.findings` turns the outcome into the report's
findings; :mod:`.leaves` reads diffoscope's JSON for the excerpt. All of it is pure: the
builds run in :mod:`reprobuild.pipeline.explain`.
"""
