; Helpers shared by mirage-tests.scm and mirage-env-tests.scm (loaded first by run-tests.sh, which defines
; mirage-out, the output folder with a trailing /, and mirage-results, the results file's name in it).

(define results (open-output-file (string-append mirage-out mirage-results)))
(define (say key . values)
  (display key results)
  (for-each (lambda (v) (display " " results) (display v results)) values)
  (newline results))

; Runs thunk; (ok . value) or (error . Script-Fu's error arguments), without stopping the script.
(define (try thunk)
  (let ((saved *error-hook*))
    (call-with-current-continuation
      (lambda (k)
        (set! *error-hook*
              (lambda args (set! *error-hook* saved) (k (cons 'error args))))
        (let ((value (thunk)))
          (set! *error-hook* saved)
          (cons 'ok value))))))

; The error text of a failed try: its arguments joined.
(define (error-text r)
  (let loop ((xs (cdr r)) (acc ""))
    (if (null? xs)
        acc
        (loop (cdr xs)
              (string-append acc " "
                             (if (string? (car xs)) (car xs)
                                 (if (symbol? (car xs)) (symbol->string (car xs)) "?")))))))

(define (report name r)
  (if (eq? (car r) 'ok)
      (say name "ok")
      (say name "error" (error-text r))))

; A new image of type (RGB or GRAY) with one opaque layer "bg" filled with colour.
(define (new-image type colour)
  (let* ((img (car (gimp-image-new 64 64 type)))
         (bg (car (gimp-layer-new img 64 64 (if (= type RGB) RGB-IMAGE GRAY-IMAGE) "bg" 100
                                  LAYER-MODE-NORMAL))))
    (gimp-image-insert-layer img bg 0 -1)
    (gimp-context-set-foreground colour)
    (gimp-drawable-fill bg FILL-FOREGROUND)
    (list img bg)))

(define (layer-count img) (car (gimp-image-get-layers img)))

(define (save img drawable name)
  (let ((path (string-append mirage-out name)))
    (file-png-save RUN-NONINTERACTIVE img drawable path path 0 9 0 0 0 0 0)))

(define blue '(40 90 200))
