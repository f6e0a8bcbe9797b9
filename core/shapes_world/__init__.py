"""The generated shapes world itself: its words (``spec``), scene sampling and rendering (``render``), caption
templates (``captions``), attribute-shape pairs and the ones held out of training (``composition``), and the harder
world's scenes and pixels (``hard``). Depends on nothing else in the project; the dataset build sits above."""
