; GIMP session 2 of run-tests.sh, with MIRAGE_MODELS=/nonexistent/mirage-env-set: an empty model-set
; parameter must take MIRAGE_MODELS over the compiled-in default (so the call fails naming that folder),
; and an explicit model-set parameter must win over MIRAGE_MODELS. Writes results-env.txt.

(let* ((ib (new-image RGB blue)) (img (car ib)) (bg (cadr ib)))
  (report "env-empty"
          (try (lambda () (plug-in-mirage-generate RUN-NONINTERACTIVE img bg "a red apple" "" 7 4 -1 ""))))
  (say "env-empty-layers" (layer-count img))
  (report "env-explicit"
          (try (lambda () (plug-in-mirage-generate RUN-NONINTERACTIVE img bg "a red apple" "" 7 4 -1
                                                    mirage-set))))
  (say "env-explicit-layers" (layer-count img))
  (gimp-image-delete img))

(say "done")
(close-output-port results)
