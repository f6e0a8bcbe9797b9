"""The generated shapes worlds themselves: the default world's words (``spec``), scene sampling and rendering
(``render``) and caption templates (``captions``); the harder world's scenes and pixels (``hard``), words
(``hard_spec``) and captions (``hard_captions``); attribute-shape pairs and the ones held out of training
(``composition``); and the worlds by name (``worlds``). Depends only on the runtime; the dataset build sits above."""
