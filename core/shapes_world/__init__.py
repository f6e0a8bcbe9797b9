"""The generated shapes world itself: its words (``spec``), scene sampling and rendering (``render``) and
caption templates (``captions``). Depends on nothing else in the project; the dataset build sits above."""
