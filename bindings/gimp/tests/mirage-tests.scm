; Script-Fu half of bindings/gimp/run-tests.sh (GIMP session 1, MIRAGE_MODELS unset): calls the three
; procedures on new 64x64 images, saves PNGs and writes "key value" lines to results.txt in the output folder
; (tests/common.scm's say); tests/check.py judges them. run-tests.sh defines before loading this file:
;   mirage-out      output folder (with a trailing /)
;   mirage-set      the text-conditioned RGBA model set (models/emoji); also the plug-in's compiled-in default
;   mirage-grey-set a grey text-conditioned set (models/fashion-text), or "" to skip that part


(say "registered"
     (car (gimp-procedural-db-proc-exists "plug-in-mirage-generate"))
     (car (gimp-procedural-db-proc-exists "plug-in-mirage-img2img"))
     (car (gimp-procedural-db-proc-exists "plug-in-mirage-inpaint")))

; 1. generate: a new layer named after the prompt, the image's size; twice with the same seed.
(let* ((ib (new-image RGB blue)) (img (car ib)) (bg (cadr ib)))
  (save img bg "input.png")
  (let ((r (try (lambda () (plug-in-mirage-generate RUN-NONINTERACTIVE img bg "a red apple" "" 7 4 -1
                                                     mirage-set)))))
    (report "generate" r)
    (if (eq? (car r) 'ok)
        (let ((layer (cadr r)))
          (say "generate-layers" (layer-count img))
          (say "generate-name" (car (gimp-item-get-name layer)))
          (say "generate-size" (car (gimp-drawable-width layer)) (car (gimp-drawable-height layer)))
          (save img layer "generate.png")
          (save img bg "generate-bg.png"))))
  (gimp-image-delete img))

(let* ((ib (new-image RGB blue)) (img (car ib)) (bg (cadr ib)))
  (let ((r (try (lambda () (plug-in-mirage-generate RUN-NONINTERACTIVE img bg "a red apple" "" 7 4 -1
                                                     mirage-set)))))
    (report "generate-again" r)
    (if (eq? (car r) 'ok) (save img (cadr r) "generate-again.png")))
  (gimp-image-delete img))

; 1b. an empty model-set parameter, MIRAGE_MODELS unset: the compiled-in default (run-tests.sh builds the
;     plug-in with MIRAGE_DEFAULT_MODELS=mirage-set); a negative prompt and an explicit guidance on the way.
(let* ((ib (new-image RGB blue)) (img (car ib)) (bg (cadr ib)))
  (let ((r (try (lambda () (plug-in-mirage-generate RUN-NONINTERACTIVE img bg "grinning face" "yellow" 3
                                                     4 2.5 "")))))
    (report "generate-default" r)
    (if (eq? (car r) 'ok) (save img (cadr r) "generate-default.png")))
  (gimp-image-delete img))

; 2. img2img: replaces the layer's content in place; no new layer.
(let* ((ib (new-image RGB blue)) (img (car ib)) (bg (cadr ib)))
  (let ((r (try (lambda () (plug-in-mirage-img2img RUN-NONINTERACTIVE img bg "a blue heart" "" 3 8 -1
                                                    mirage-set 0.7)))))
    (report "img2img" r)
    (say "img2img-layers" (layer-count img))
    (save img bg "img2img.png"))
  (gimp-image-delete img))

; 3. inpaint: a rectangular selection (16..47 in x and y) is regenerated, the rest kept.
(let* ((ib (new-image RGB blue)) (img (car ib)) (bg (cadr ib)))
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 16 16 32 32)
  (let ((r (try (lambda () (plug-in-mirage-inpaint RUN-NONINTERACTIVE img bg "a red apple" "" 5 8 -1
                                                    mirage-set 1.0)))))
    (report "inpaint" r)
    (say "inpaint-layers" (layer-count img))
    (save img bg "inpaint.png"))
  (gimp-image-delete img))

; 4. failures: each must fail with the library's (or the plug-in's) message and leave the image as it was.
(let* ((ib (new-image RGB blue)) (img (car ib)) (bg (cadr ib)))
  (say "bad-layers-before" (layer-count img))
  (report "bad-generate"
          (try (lambda () (plug-in-mirage-generate RUN-NONINTERACTIVE img bg "a red apple" "" 7 4 -1
                                                    "/nonexistent/mirage-models"))))
  (report "bad-img2img"
          (try (lambda () (plug-in-mirage-img2img RUN-NONINTERACTIVE img bg "x" "" 7 4 -1
                                                   "/nonexistent/mirage-models" 0.5))))
  ; rejected by the library after the model set has loaded: strength must be in (0, 1]
  (report "bad-strength"
          (try (lambda () (plug-in-mirage-img2img RUN-NONINTERACTIVE img bg "x" "" 7 4 -1 mirage-set 1.5))))
  (report "bad-steps"
          (try (lambda () (plug-in-mirage-generate RUN-NONINTERACTIVE img bg "x" "" 7 0 -1 mirage-set))))
  ; no selection
  (report "bad-inpaint"
          (try (lambda () (plug-in-mirage-inpaint RUN-NONINTERACTIVE img bg "x" "" 7 4 -1 mirage-set 1.0))))
  (say "bad-layers-after" (layer-count img))
  (save img bg "bad.png")
  (gimp-image-delete img))

; 5. a grey set on a grayscale image (GRAY8 input conversion, GRAYA layer).
(if (> (string-length mirage-grey-set) 0)
    (let* ((ib (new-image GRAY '(30 30 30))) (img (car ib)) (bg (cadr ib)))
      (report "grey-img2img"
              (try (lambda () (plug-in-mirage-img2img RUN-NONINTERACTIVE img bg "a shirt" "" 1 8 -1
                                                       mirage-grey-set 0.9))))
      (save img bg "grey-img2img.png")
      (let ((r (try (lambda () (plug-in-mirage-generate RUN-NONINTERACTIVE img bg "a sneaker" "" 1 4 -1
                                                         mirage-grey-set)))))
        (report "grey-generate" r)
        (if (eq? (car r) 'ok)
            (begin
              (say "grey-generate-layers" (layer-count img))
              (save img (cadr r) "grey-generate.png"))))
      (gimp-image-delete img))
    (say "grey-skipped"))

; 6. cancel: GIMP 2.10's Cancel button kills the plug-in (GP_QUIT, then SIGKILL 10 ms later). Once the
;    marker file exists, run-tests.sh's watcher SIGKILLs this long generation the same way; the call must
;    fail and the image stay as it was, and GIMP must go on working (the script reaching "done").
(let* ((ib (new-image RGB blue)) (img (car ib)) (bg (cadr ib)))
  (close-output-port (open-output-file (string-append mirage-out "cancel-marker")))
  (report "cancel"
          (try (lambda () (plug-in-mirage-generate RUN-NONINTERACTIVE img bg "a red apple" "" 7 1000 -1
                                                    mirage-set))))
  (say "cancel-layers" (layer-count img))
  (save img bg "cancel.png")
  (gimp-image-delete img))

(say "done")
(close-output-port results)
