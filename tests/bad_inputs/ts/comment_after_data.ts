@problemName x
@univariate true
@classLabel true a b
@data
# a comment
1,2:a
